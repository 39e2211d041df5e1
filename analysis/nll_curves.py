"""log test NLL against log train NLL after each epoch, one line per seed (dot: last epoch). (F3; study: depth)

Reads the results that `trajviz reproduce` recorded and writes the figure as PDF and PNG
(GIF for the animation). Usage: python analysis/nll_curves.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("nll_curves"))
