"""The RabbitMQ transport: everything that talks AMQP.

``AMQPWorker`` (worker.py) orchestrates; connections and failover, the
broker's declarations, topology names, confirmed publishing, consuming,
settling and acks, the intake of deliveries, due-job holds, quarantine,
failed-job operations, the schedule token and its leader, and read-only
inspection each live in a module of their own. Private: the public names
are re-exported by ``amqp_worker``.
"""
