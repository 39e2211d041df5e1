"""F9's landscape scans as an interactive page (hover a curve for its run and direction). (F9; study: landscape)

Reads the results that `trajviz reproduce` recorded and writes the figure as a self-contained
HTML page (plotly; opens offline). Usage: python analysis/landscape_interactive.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("landscape_interactive"))
