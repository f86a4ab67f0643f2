"""``python -m amqp_worker.cli``: the same as the ``amqp-worker`` console script."""

from amqp_worker.cli import main

if __name__ == "__main__":
    main()
