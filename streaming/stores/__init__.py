"""Object stores: one implementation per module, all with the interface of `base.ObjectStore`."""
