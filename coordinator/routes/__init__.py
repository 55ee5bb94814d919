"""The v3 routers, one module per resource; ``coordinator.app`` mounts them under ``/api/v3``."""
