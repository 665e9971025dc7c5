"""A worker whose RabbitMQ connection broke on its side only reconnects and answers remote control.

When the network fails between a worker and RabbitMQ, the worker notices first (its own heartbeat
check) and reconnects at once, while RabbitMQ holds the old session, and the queues it owns,
until its heartbeat timeout. Celery 5.7 declares each worker's remote-control queue exclusive to
its connection: the new connection's declaration was refused (RESOURCE_LOCKED) and the worker
exited ("Unrecoverable error") — scenario 19 of the failure-injection suite, once in eight runs.
settings/celery.py declares them non-exclusive (CELERY_CONTROL_QUEUE_EXCLUSIVE)."""

import uuid

import pytest

from tests.fakes.tcp_proxy import TcpProxy
from tests.processes import WorkerProcess
from tests.processes import test_database_url as database_url
from tests.reliability.rabbitmq import private_vhost
from tests.support import answers_ping, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_whose_connection_broke_on_its_side_answers_remote_control_once_reconnected(tmp_path):
    with private_vhost("remote-control") as broker_url:
        vhost = broker_url.rpartition("/")[2]
        proxy = TcpProxy("127.0.0.1", 5672)
        node = f"reconnect-{uuid.uuid4().hex[:8]}@test"
        worker = WorkerProcess(
            {
                "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}",
                "DATABASE_URL": database_url(),
                "CELERY_BROKER_HEARTBEAT": "60",  # RabbitMQ holds a silent session for two of them
            },
            tmp_path / "worker.log",
            args=("--hostname", node, "--pool", "solo"),
        )
        try:
            worker.start()

            def answers() -> bool:  # straight to RabbitMQ, not through the proxy
                return answers_ping(broker_url, node, timeout=1)

            wait_for(answers, timeout=30, message="the worker answering a ping")
            proxy.drop_clients()
            wait_for(lambda: worker.log().count("Connected to amqp://") >= 2, timeout=30, message="a reconnection")

            wait_for(answers, timeout=30, message=f"the reconnected worker answering a ping:\n{worker.log()[-3000:]}")
            assert worker.process.poll() is None, worker.log()[-3000:]
            assert "Unrecoverable error" not in worker.log()
        finally:
            worker.stop()
            proxy.close()
