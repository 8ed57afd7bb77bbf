"""Wire parsers: bytes in, small immutable records out (DCE/RPC, HTTP request lines, first-payload
signatures). They import nothing of pcapclass: the tables they match against are handed to them
(``pcapclass.tables`` builds them from rules/), and a malformed input is ``None``, never an error."""
