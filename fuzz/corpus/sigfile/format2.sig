format = 2
algorithm = "ed25519"
