"""The incident record: index, evidence bundles and their collection, archive and verification."""
