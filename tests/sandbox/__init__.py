"""Test sandbox: a fake Wazo host, a local ACME server and certbot runners."""
