"""`python -m deployer`: the `deployer` program (deployer.program imported as a module, so that
its byte-compiled code is used, as the installed `deployer` script does)."""

from deployer.program import main

main()
