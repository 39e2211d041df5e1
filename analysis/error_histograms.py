"""Histograms of test error over seeds, shallowest vs deepest nets. (F2; study: depth)

Reads the results that `trajviz reproduce` recorded and writes the figure as PDF and PNG
(GIF for the animation). Usage: python analysis/error_histograms.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("error_histograms"))
