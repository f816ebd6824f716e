"""`python -m deployer`: the `deployer` program (deployer.cli imported as a module, so that its
byte-compiled code is used, as the installed `deployer` script does)."""

from deployer.cli import main

main()
