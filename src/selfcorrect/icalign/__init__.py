"""In-context alignment lab: reproduce the synthetic experiments of arXiv 2405.18634 with the reference's bugs fixed.

data (the triplet sampler), losses (Plackett–Luce, Bradley–Terry), model (one GPT-2-style transformer with switches),
gd (the gradient-descent reference), train, evaluate, presets, sweep, plot and cli (`selfcorrect icalign …`).
Nothing is imported here, so that importing the CLI does not load torch; see docs/icalign.md.
"""
