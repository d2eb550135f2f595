"""The zoo server: one FastAPI app that serves every registered model.

    app = create_app()                      # every registered model, bundled demo weights
    app = create_app(["efficientad"], backend="onnxruntime", export_dir="exports")

Routes: the Open Inference Protocol v2 under /v2 (`zoo.serving.oip`), a REST predict route per
model under /models (`zoo.serving.rest`), Prometheus /metrics, OpenAPI docs at /docs (Swagger UI)
and /redoc, both from local assets (`zoo.serving.docs`), and,
when a demo is given, the Gradio app at /demo. Models load in the background after
start-up (the liveness probe answers at once, readiness once loading is done); each model
loads on its own, so one failing is reported on its ready endpoint while the others serve.

The app never imports `demos/` (arrows point down): `zoo serve`, the composition root, hands
`create_app` a demo factory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from zoo.serving import oip, rest
from zoo.serving.batching import BatchingConfig
from zoo.serving.docs import install_docs
from zoo.serving.errors import RequestIdMiddleware, ServingError, internal_error, request_id_of
from zoo.serving.limits import ApiKeyMiddleware, BodyLimitMiddleware, Limits, api_key_openapi, check_bind, resolve_api_key
from zoo.serving.memory import MemoryReleaseMiddleware
from zoo.serving.metrics import CONTENT_TYPE, ServingMetrics
from zoo.serving.model_manager import ModelManager

if TYPE_CHECKING:
    from zoo.pipeline import Pipeline

log = logging.getLogger(__name__)

DemoFactory = Callable[[ModelManager], Any]  # manager -> gr.Blocks
DEMO_PATH = "/demo"


def create_app(
    models: str | Sequence[str] | Mapping[str, Pipeline] | None = None,
    backend: str = "torch",
    *,
    device: str = "cpu",
    export_dir: str | Path | None = None,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    batching: BatchingConfig | None = None,
    limits: Limits | None = None,
    demo: DemoFactory | None = None,
    load_in_background: bool = True,
    random_weights: bool = False,
) -> FastAPI:
    """Build the app. `models`: None (every registered model), names ("a,b" or ["a", "b:variant"]),
    or ready pipelines {name: pipeline}. `api_key` (or $ZOO_API_KEY) is required when `host`
    is not a loopback address; when set, every route but the health probes needs it.
    Models load with their bundled weights; one without them fails to load (its ready endpoint
    says why) unless `random_weights=True` asks for random initialisation for every model."""
    from zoo import __version__

    api_key = resolve_api_key(api_key)
    check_bind(host, api_key)
    limits = limits or Limits()
    metrics = ServingMetrics()
    manager = ModelManager(models, backend=backend, device=device, export_dir=export_dir, batching=batching, metrics=metrics, random_weights=random_weights)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.bind_loop(asyncio.get_running_loop())
        loader = None
        if manager.loading:
            if load_in_background:
                loader = asyncio.create_task(asyncio.to_thread(manager.load_all))
            else:
                await asyncio.to_thread(manager.load_all)
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                await asyncio.wait([loader], timeout=60)
            await manager.aclose()

    app = FastAPI(
        title="zoo",
        version=__version__,
        description=(
            "Every registered model over the Open Inference Protocol v2 (KServe; `tritonclient` works unchanged, "
            "binary tensor extension included) and a simple REST predict route per model. "
            "Metrics at /metrics (Prometheus), the Gradio demo at /demo."
        ),
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs and /redoc from local assets (FastAPI's load a CDN)
        redoc_url=None,
    )
    install_docs(app)
    app.state.manager = manager
    app.state.limits = limits
    app.state.metrics = metrics
    _install_error_handlers(app)
    app.include_router(oip.build_router(manager, limits, "zoo", __version__))
    app.include_router(rest.build_router(manager, limits))

    @app.get("/metrics", tags=["Monitoring"], summary="Prometheus metrics (nv_inference_* names, as Triton's)")
    def metrics_route() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/", tags=["Monitoring"], summary="Where things are, and each model's status")
    def index() -> dict[str, Any]:
        return {
            "name": "zoo",
            "version": __version__,
            "api": "/v2",
            "rest": "/models/{name}/predict",
            "docs": "/docs",
            "redoc": "/redoc",
            "metrics": "/metrics",
            "demo": DEMO_PATH + "/" if demo is not None else None,
            "ready": manager.ready,
            "models": [entry.to_json() for entry in manager.entries.values()],
        }

    if demo is not None:
        mount_demo(app, demo(manager), api_key=api_key, max_file_size=limits.max_body_bytes)
    # Added last = outermost: the key is checked before the body limit reads anything.
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)
    if api_key:
        # the demo has its own login page (Gradio auth, user "zoo", password = the key)
        app.add_middleware(ApiKeyMiddleware, api_key=api_key, exempt_prefixes=(DEMO_PATH,) if demo is not None else ())
        _declare_api_key(app)
    app.add_middleware(MemoryReleaseMiddleware)  # malloc_trim once idle after a request that grew the process
    app.add_middleware(RequestIdMiddleware, logger=log)  # outermost: refusals by the limits above carry an id too
    return app


def mount_demo(app: FastAPI, blocks: Any, api_key: str | None = None, max_file_size: int | None = None) -> None:
    import gradio as gr

    auth = ("zoo", api_key) if api_key else None
    # root_path: Gradio's /run/predict (a clicked example) builds file URLs without the mount
    # path unless it is given; /config adds it either way.
    gr.mount_gradio_app(app, blocks, path=DEMO_PATH, root_path=DEMO_PATH, auth=auth, max_file_size=max_file_size, show_error=True)


def _declare_api_key(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api_key_openapi(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as {"error": "..."}: the v2 shape, which tritonclient parses."""

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, err: ServingError) -> JSONResponse:
        if err.status == 500:  # a graph or pipeline raised: its message stays in the log
            body, headers = internal_error(request_id_of(request.scope), log, f"{request.method} {request.url.path} failed", err.__cause__ or err)
            return JSONResponse(body, status_code=500, headers={**err.headers, **headers})
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in err.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        # RequestIdMiddleware answers first; this last resort runs outside every middleware.
        body, headers = internal_error(request_id_of(request.scope), log, f"unhandled error on {request.method} {request.url.path}", err)
        return JSONResponse(body, status_code=500, headers=headers)


@dataclass
class ServeOptions:
    """What `zoo serve` passes in."""

    host: str = "127.0.0.1"
    port: int = 8000
    models: str | None = None
    backend: str = "torch"
    device: str = "cpu"
    export_dir: str | None = None
    api_key: str | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: Limits = field(default_factory=Limits)
    demo: DemoFactory | None = None
    log_level: str = "info"
    random_weights: bool = False


def urls(host: str, port: int, demo: bool) -> dict[str, str]:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    base = f"http://{shown}:{port}"
    out = {"api": f"{base}/v2", "rest": f"{base}/models", "docs": f"{base}/docs", "metrics": f"{base}/metrics"}
    if demo:
        out["demo"] = f"{base}{DEMO_PATH}/"
    return out


def serve(options: ServeOptions, echo: Callable[[str], None] = print) -> None:
    """Build the app, print where everything is, and run uvicorn until interrupted."""
    import torch
    import uvicorn

    threads = torch.get_num_threads()
    if options.batching.instances > 1 and str(options.device).startswith("cpu"):
        from zoo.serving.batching import threads_per_instance

        # torch's intra-op pool is per process: each instance's share, so instances do not oversubscribe the cores
        torch.set_num_threads(min(threads, threads_per_instance(options.batching.instances)))
    app = create_app(
        options.models, options.backend, device=options.device, export_dir=options.export_dir, api_key=options.api_key,
        host=options.host, batching=options.batching, limits=options.limits, demo=options.demo,
        random_weights=options.random_weights,
    )
    manager: ModelManager = app.state.manager
    echo(f"zoo serve: {len(manager.entries)} model(s) ({', '.join(manager.entries)}), backend {options.backend}, "
         f"{options.batching.instances} instance(s) per graph, on {options.host}:{options.port}")
    for label, url in urls(options.host, options.port, options.demo is not None).items():
        echo(f"  {label:<8} {url}")
    try:
        # "auto" takes httptools (C HTTP parsing) and uvloop, both base dependencies: with h11 and the asyncio
        # loop a v2 request cost about 1 ms more on the serving bench's 2-core CPU (docs/benchmarks.md)
        uvicorn.run(app, host=options.host, port=options.port, log_level=options.log_level, timeout_graceful_shutdown=5,
                    http="auto", loop="auto")
    finally:
        torch.set_num_threads(threads)
