"""The worker core: what every worker shares, whatever carries its jobs.

The job and its wire format, the Worker protocol, the BaseWorker template
(register, enqueue checks, start/stop, the one attempt → retry-or-park flow),
handlers and the threads sync handlers run on, the task pool, the loop-stall
watchdog, periodic-job rules and the ticker, typed enqueue, hooks and every
default. It never imports an AMQP client or a transport package
(tests/test_layout.py holds it to that). Private: the public names are
re-exported by ``amqp_worker``.
"""
