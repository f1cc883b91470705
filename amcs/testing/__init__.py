"""Stand-ins that tests, benchmarks and users' own tests share, importable from the installed
package (no ``sys.path`` edits): ``amcs.testing.loopback.LoopbackServer``, an inference server
on 127.0.0.1 that speaks SGLang's and OpenAI's HTTP APIs and samples from the bundled tiny policy.
"""

from amcs.testing.loopback import LoopbackServer

__all__ = ["LoopbackServer"]
