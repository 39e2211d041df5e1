"""Leave-one-out k-NN group accuracy per epoch in function space (filled: permutation p <= 0.05) and each group's spread, dotted at its divergence time. (F10; study: trajectories)

Reads the results that `trajviz reproduce` recorded and writes the figure as PDF and PNG
(GIF for the animation). Usage: python analysis/group_separation.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("group_separation"))
