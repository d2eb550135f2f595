"""Task metrics shared by models, training and benchmarks (one module a task).

- `zoo.metrics.anomaly`: image/pixel AUROC, AU-PRO (imported here).
- `zoo.metrics.coco`: COCO box and mask AP through pycocotools.
- `zoo.metrics.segmentation`: panoptic quality (PQ/SQ/RQ) and mIoU.
- `zoo.metrics.image`: PSNR, SSIM, Laplacian high-frequency error, edge F1.
- `zoo.metrics.generation`: sample quality of generators (FID, KID, k-NN precision/recall) in a named
  feature space: zoo's shipped `ShapesFeatureNet` (`zoo.metrics.feature_net`) or a local FID Inception.
"""

from zoo.metrics.anomaly import au_pro, evaluate_anomaly, image_auroc, pixel_auroc, pro_curve

__all__ = ["au_pro", "evaluate_anomaly", "image_auroc", "pixel_auroc", "pro_curve"]
