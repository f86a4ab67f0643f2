"""The in-memory transport: ``SimpleWorker`` and the failed jobs it keeps in memory.

Needs no broker and imports nothing of the RabbitMQ transport. Private:
``amqp_worker.SimpleWorker`` is the public name.
"""
