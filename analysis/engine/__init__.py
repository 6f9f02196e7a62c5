"""The CKA engine: Grams (`gram`), minibatch CKA (`cka`), the probe stream (`stream`) and the first principal component from the same Grams (`pcview`)."""
