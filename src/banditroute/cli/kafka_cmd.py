"""``banditroute kafka up|down|status``: a local Apache Kafka broker without Docker."""

from __future__ import annotations

import click

from banditroute.kafka.local import DEFAULT_PORT, BrokerError, LocalKafka

_port = click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port of the broker's listener on 127.0.0.1.",
)


@click.group()
def kafka() -> None:
    """Run a single-node Apache Kafka broker (KRaft) on 127.0.0.1, fetched with Maven.

    Needs Java 17+ and Maven. Jars and data live under $BANDITROUTE_HOME (default ~/.cache/banditroute).
    """


@kafka.command()
@_port
@click.option("--timeout", type=float, default=90.0, show_default=True, help="Seconds to wait until ready.")
def up(port: int, timeout: float) -> None:
    """Fetch (once), format (once) and start the broker; wait until it accepts connections."""
    broker = LocalKafka(port)
    try:
        started, seconds = broker.up(timeout_s=timeout)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    verb = "ready" if started else "already up"
    click.echo(f"kafka {verb} at {broker.bootstrap} ({seconds:.1f} s; pid {broker.status().pid})")


@kafka.command()
@_port
@click.option("--purge", is_flag=True, help="Also delete the broker's data folder.")
def down(port: int, purge: bool) -> None:
    """Stop the broker started by 'kafka up' (by its pid)."""
    click.echo(f"kafka at 127.0.0.1:{port}: {LocalKafka(port).down(purge=purge)}")


@kafka.command()
@_port
def status(port: int) -> None:
    """Report whether the broker is up. Exit code 0 when up, 3 when down."""
    st = LocalKafka(port).status()
    click.echo(f"kafka at {st.bootstrap}: {st.detail}" + (f" (pid {st.pid})" if st.pid else ""))
    raise SystemExit(0 if st.running else 3)
