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
from lisgw.cli.run import run


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="lisgw")
def main() -> None:
    """lisgw: a laboratory instrument gateway between analyzers and the HIS.

    \b
    Examples:
      lisgw demo                            # gateway + simulated analyzers and HIS
      lisgw decode capture.bin              # what did this analyzer send?
      lisgw decode --format text *.bin      # one readable line per message
      lisgw drivers list                    # the analyzers the catalogue knows
      lisgw drivers check my-analyzer.yaml  # validate a new driver profile
      lisgw config check /etc/lisgw/lisgw.yaml   # every problem in a gateway config
      lisgw run --config /etc/lisgw/lisgw.yaml     # run the gateway
    """


main.add_command(decode)
main.add_command(drivers)
main.add_command(config)
main.add_command(run)
main.add_command(demo)
