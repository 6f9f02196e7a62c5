"""The cluster: an embedded or joined Ray (`local_ray`), what it can run (`resources`), Ray Jobs (`submit`) and one driver per sweep (`lock`)."""
