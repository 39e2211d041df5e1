"""Test error vs depth, with and without pre-training (box: quartiles; whiskers: 1.5 IQR; dots: outlying seeds). (F1, F2; study: depth)

Reads the results that `trajviz reproduce` recorded and writes the figure as PDF and PNG
(GIF for the animation). Usage: python analysis/depth_boxplots.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("depth_boxplots"))
