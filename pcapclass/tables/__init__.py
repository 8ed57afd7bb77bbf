"""The tables pcapclass matches traffic against, loaded from rules/*.toml and validated.

``services`` (the port table and the one list of service ids), ``interfaces`` (DCE/RPC UUIDs),
``http_paths`` (Exchange request paths, RPC over HTTP), ``server_evidence`` (what makes a host
an Exchange server) and ``rules`` (the shipped files plus a site's ``--rules`` files, which may
carry services, interfaces and paths alike). Every fault is a ``RulesError`` with the file and
the key path (``toml_files``).
"""
