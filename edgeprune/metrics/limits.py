"""The drop each metric accepts when the user gives no --max-drop (in the metric's unit: points; perplexity: ppl)."""
from __future__ import annotations

# the drop accepted when max_drop is not given, by metric (points; perplexity: ppl). 10-NN overlap moves in whole
# neighbours and is far stricter than a per-sample cosine. On MiniLM-L6 and 500 held-out Rotten Tomatoes snippets
# (benchmarks/results/metric_scale.md): PyTorch's dynamic INT8 of every Linear, a step users ship, keeps 62.9
# (cosine 0.933); uniform 10% pruning with compensation keeps 79.6 (cosine 0.978). 30 points accepts what INT8
# costs less a margin; a stricter limit would refuse a quantized model too
DEFAULT_MAX_DROP = {"top1": 1.0, "agreement": 1.0, "cosine": 1.0, "neighbours": 30.0, "perplexity": 1.0, "custom": 1.0}
