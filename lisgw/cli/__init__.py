"""The ``lisgw`` command line (click).

Layer: interface, the top of the import graph. Each sub-command lives in its own module and
is registered here.
"""

from __future__ import annotations

import click

from lisgw import __version__
from lisgw.cli.config import config
from lisgw.cli.decode import decode
from lisgw.cli.demo import demo
from lisgw.cli.drivers import drivers
from lisgw.cli.orders import orders
from lisgw.cli.outbox import outbox
from lisgw.cli.results import results
from lisgw.cli.run import run
from lisgw.cli.sample import sample
from lisgw.cli.simulate import simulate
from lisgw.cli.status import status
from lisgw.cli.tail import tail
from lisgw.cli.top import top
from lisgw.cli.unmatched import unmatched


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="lisgw")
def main() -> None:
    """lisgw: a laboratory instrument gateway between analyzers and the HIS.

    \b
    Examples:
      lisgw demo                            # gateway + simulated analyzers and HIS
      lisgw simulate his --listen 12576     # play the HIS (see lisgw simulate --help)
      lisgw decode capture.bin              # what did this analyzer send?
      lisgw decode --format text *.bin      # one readable line per message
      lisgw drivers list                    # the analyzers the catalogue knows
      lisgw drivers check my-analyzer.yaml  # validate a new driver profile
      lisgw config check /etc/lisgw/lisgw.yaml   # every problem in a gateway config
      lisgw run --config /etc/lisgw/lisgw.yaml     # run the gateway
      lisgw status                          # is each analyzer connected? what waits?
      lisgw sample 12345                    # did sample 12345's results reach the HIS?
      lisgw orders list --since 2h          # orders received in the last two hours
      lisgw results list --state dead       # results the HIS refused
      lisgw outbox list --dead              # dead letters, with the reason
      lisgw outbox retry 812                # send one to the HIS again (audited)
      lisgw unmatched list                  # results no order matched
    """


main.add_command(decode)
main.add_command(drivers)
main.add_command(config)
main.add_command(run)
main.add_command(demo)
main.add_command(simulate)
main.add_command(status)
main.add_command(orders)
main.add_command(results)
main.add_command(sample)
main.add_command(outbox)
main.add_command(unmatched)
main.add_command(tail)
main.add_command(top)
