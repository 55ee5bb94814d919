"""The render side on Ray: the per-job actor, the image and clip renderers (Serve deployments),
the compositor, and the facade the API uses to reach them."""
