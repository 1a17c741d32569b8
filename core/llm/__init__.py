"""Generation backends behind one small interface (`base.Generator`)."""
