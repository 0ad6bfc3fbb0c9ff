"""The management API's endpoints, one module per resource (as RabbitMQ's management plugin
has one per resource); :class:`~..api.API` routes requests to them."""
