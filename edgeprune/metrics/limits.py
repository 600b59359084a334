"""The drop each metric accepts when the user gives no --max-drop (in the metric's unit: points; perplexity: ppl)."""
from __future__ import annotations

# the drop accepted when max_drop is not given, by metric (points; perplexity: ppl). 10-NN overlap moves in whole
# neighbours and is far stricter than a per-sample cosine: a 25%-pruned MiniLM-L6 at embedding cosine 0.96 keeps
# ~73% of each snippet's neighbours (benchmarks/results/recover.md)
DEFAULT_MAX_DROP = {"top1": 1.0, "agreement": 1.0, "cosine": 1.0, "neighbours": 30.0, "perplexity": 1.0, "custom": 1.0}
