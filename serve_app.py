"""Ray Serve entry point: ``serve run serve_app:app``.

The FastAPI app is the ingress deployment. It is built on the replica (not pickled from the
driver) so each replica opens its own database engine and object-store client.
"""

from __future__ import annotations

from ray import serve

from coordinator.app import create_app
from coordinator.settings import get_settings


@serve.deployment(name="Api", num_replicas=1, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class Api:
    def __init__(self) -> None:
        self.settings = get_settings()

    def __serve_build_asgi_app__(self):
        return create_app(self.settings)


app = Api.bind()
