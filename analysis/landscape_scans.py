"""Training NLL along 7 unit stochastic-gradient directions around the final parameters of each run. (F9; study: landscape)

Reads the results that `trajviz reproduce` recorded and writes the figure as PDF and PNG
(GIF for the animation). Usage: python analysis/landscape_scans.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("landscape_scans"))
