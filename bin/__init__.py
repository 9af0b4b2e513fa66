"""Entry code of the oarcloud and oarcloud-admin commands (plumbum CLI)."""
