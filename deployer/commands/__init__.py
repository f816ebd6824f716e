"""Remote commands as data: pure builders returning `shell.Command`s, and parsers of their output.

Builders never execute; `transport.Transport.run` does. Every interpolated value goes through
`shell.quote`/`shell.argv`.
"""
