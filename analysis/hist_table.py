"""Histogram initialization vs uniform init and pre-training. (F7; study: hist)

Reads the results that `trajviz reproduce` recorded and writes the figure as PDF and PNG
(GIF for the animation). Usage: python analysis/hist_table.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("hist_table"))
