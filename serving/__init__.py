"""HTTP serving for every registered model: Open Inference Protocol v2 (Triton/KServe
compatible), simple REST, dynamic batching, limits, Prometheus metrics.

    from zoo.serving import create_app
    app = create_app(["efficientad"])          # then: uvicorn.run(app)

`zoo serve` is the command-line front (it also mounts the Gradio demo at /demo).
"""

from zoo.serving.app import ServeOptions, create_app, serve
from zoo.serving.batching import BatchingConfig
from zoo.serving.limits import Limits

__all__ = ["BatchingConfig", "Limits", "ServeOptions", "create_app", "serve"]
