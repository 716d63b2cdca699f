"""The HTTP routes, one module per resource. A route parses its request, asks
``app.access`` who may see what, calls a service and shapes the answer; no router
imports another."""
