"""Test error vs layer width (mean, 95% error bars over seeds). (F6; study: width)

Reads the results that `trajviz reproduce` recorded and writes the figure as PDF and PNG
(GIF for the animation). Usage: python analysis/width_errors.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("width_errors"))
