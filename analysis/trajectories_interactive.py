"""The t-SNE trajectories as an interactive page (hover, hide a group, slide through checkpoints). (F10; study: trajectories)

Reads the results that `trajviz reproduce` recorded and writes the figure as a self-contained
HTML page (plotly; opens offline). Usage: python analysis/trajectories_interactive.py [DIR] [--profile PROFILE] [--studies DIR] [-o OUT]
"""

import sys

from trajviz.cli.figure import figure_main

if __name__ == "__main__":
    sys.exit(figure_main("trajectories_interactive"))
