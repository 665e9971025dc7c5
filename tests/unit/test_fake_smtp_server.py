"""The fake SMTP server's pause, which the reliability scenarios rely on to cut a host at a moment
when no e-mail is accepted and unrecorded (tests/reliability/scenarios.py)."""

import smtplib
import threading

from tests.fakes.smtp_server import FakeSmtpServer

MESSAGE = "Subject: Order confirmed\r\nMessage-ID: <m1@shop>\r\n\r\nThank you.\r\n"


def test_a_pause_starts_only_once_the_message_already_past_rcpt_is_accepted() -> None:
    with FakeSmtpServer() as server, smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.ehlo()
        client.mail("shop@example.com")
        client.rcpt("r1@example.com")  # answered: the message is on its way, the pause must wait for it
        seen_inside: list[list[str]] = []
        entered = threading.Event()

        def pause() -> None:
            with server.paused():
                seen_inside.append([m.message_id for m in server.received()])
                entered.set()

        pausing = threading.Thread(target=pause)
        pausing.start()
        assert not entered.wait(0.3), "the pause began with a message past RCPT not yet accepted"
        client.data(MESSAGE)
        pausing.join(5)

    assert seen_inside == [["<m1@shop>"]]


def test_a_pause_does_not_wait_for_a_client_that_gave_up_after_rcpt() -> None:
    with FakeSmtpServer() as server:
        client = smtplib.SMTP(server.host, server.port, timeout=5)
        client.ehlo()
        client.mail("shop@example.com")
        client.rcpt("r1@example.com")
        client.close()  # the connection dropped, no DATA
        with server.paused(timeout=5):
            assert server.received() == []


def test_while_paused_a_new_message_waits_at_rcpt_and_goes_through_after() -> None:
    with FakeSmtpServer() as server, smtplib.SMTP(server.host, server.port, timeout=5) as client:
        client.ehlo()
        with server.paused():
            sending = threading.Thread(target=client.sendmail, args=("shop@example.com", ["r1@example.com"], MESSAGE))
            sending.start()
            sending.join(0.5)
            assert sending.is_alive() and server.received() == []
        sending.join(5)
        assert [m.to for m in server.received()] == [["r1@example.com"]]
