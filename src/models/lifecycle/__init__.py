"""The model lifecycle: versions, their index and diffs, signed catalogs and updates.

    models.lifecycle.version_control   ModelVersionControl: immutable versions, aliases, rollback
    models.lifecycle.version_index     the database index of versions, aliases and their history
    models.lifecycle.version_records   what a version records (lineage, metrics, tags)
    models.lifecycle.version_diff      what changed between two versions
    models.lifecycle.catalog           signed update catalogs (Ed25519): format, signing, verifying
    models.lifecycle.update_config     the `updates:` section of config.yaml
    models.lifecycle.update_sources    where catalogs and their files come from (folder, HTTP)
    models.lifecycle.update_publish    publishing a version into a catalog
    models.lifecycle.update_manager    ModelUpdateManager: check, download, verify, install, roll back

The seed's import paths (`models.version_control`, `models.update_manager`) and the former flat
module names keep working: each is an alias of the module here (the same module object, so
patching either name patches both).
"""
