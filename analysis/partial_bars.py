"""Partial pre-training (median, IQR bars, seeds as dots). (F8; study: partial)

Reads the results that `trajviz reproduce` recorded and writes the figure as PDF and PNG
(GIF for the animation). Usage: python analysis/partial_bars.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("partial_bars"))
