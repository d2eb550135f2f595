"""The Gradio demo: a tab per registered model, built from the registry (`build_demo`).

`zoo demo` runs it alone; `zoo serve` mounts it at /demo beside the HTTP API.
"""

from zoo.demos.app import build_demo, launch_demo

__all__ = ["build_demo", "launch_demo"]
