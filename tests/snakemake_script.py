"""Run one workflow script outside Snakemake, for tests: ``python snakemake_script.py SPEC``.

SPEC is a JSON file ``{"script", "input", "output", "params", "log"}``; the script
gets a ``snakemake`` object with the same attribute access as under Snakemake
(``snakemake.input.name``, ``snakemake.output[0]``, ``snakemake.params.key``). It runs
in its own process because the scripts send stderr to their log file.
"""

import json
import runpy
import sys


class Named(list):
    """A list whose items are also attributes (Snakemake's ``Namedlist``)."""

    def __init__(self, mapping):
        super().__init__(mapping.values())
        self.__dict__.update(mapping)


if __name__ == "__main__":
    spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
    ns = Named({})
    ns.input, ns.output, ns.params = (Named(spec.get(k, {})) for k in ("input", "output", "params"))
    ns.log, ns.threads = [spec["log"]], 1
    runpy.run_path(spec["script"], init_globals={"snakemake": ns}, run_name="__main__")
