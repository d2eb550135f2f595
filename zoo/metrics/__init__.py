"""Task metrics shared by models, training and benchmarks (one module a task)."""

from zoo.metrics.anomaly import au_pro, evaluate_anomaly, image_auroc, pixel_auroc, pro_curve

__all__ = ["au_pro", "evaluate_anomaly", "image_auroc", "pixel_auroc", "pro_curve"]
