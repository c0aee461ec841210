"""The local spot cloud: emulators of what moto lacks (metadata service with spot notices, ...)."""
