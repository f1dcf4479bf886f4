# plugin-supervisor plugin signature. Check it with `supervisorctl plugin verify BINARY`.
format = 1
algorithm = "ed25519"
name = "echo"
version = "1.2.0"
sha256 = "092c79e8f80e559e404bcf660c48f3522b67aba9ff1484b0367e1a4ddef7431d"
key_id = "89485a786029b4d5"
signature = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
