"""Figures for the book and the command line, in two modules: :mod:`.data` draws tiles and
their statistics, :mod:`.scores` draws run records. Both are importable from here."""

from .data import (
    domain_colours,
    outline,
    plot_channel_histograms,
    plot_domain_gallery,
    plot_domain_rows,
    plot_embeddings,
    plot_error_cases,
    plot_images,
    plot_shift_grid,
    plot_stain_vectors,
    thumbnail,
)
from .scores import (
    colour,
    plot_ablation,
    plot_effects,
    plot_reliability,
    plot_score_distributions,
    plot_score_vs_fraction,
    plot_shift_dial,
    plot_strategy_scores,
    plot_threshold_sweeps,
    plot_training_curves,
)

__all__ = [
    "colour",
    "domain_colours",
    "outline",
    "plot_ablation",
    "plot_channel_histograms",
    "plot_domain_gallery",
    "plot_domain_rows",
    "plot_effects",
    "plot_embeddings",
    "plot_error_cases",
    "plot_images",
    "plot_reliability",
    "plot_score_distributions",
    "plot_score_vs_fraction",
    "plot_shift_dial",
    "plot_shift_grid",
    "plot_stain_vectors",
    "plot_strategy_scores",
    "plot_threshold_sweeps",
    "plot_training_curves",
    "thumbnail",
]
