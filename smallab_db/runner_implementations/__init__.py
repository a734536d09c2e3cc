"""smallab 2.x's specification runners, under their 2.x module paths (defined in
:mod:`smallab_db.specification_runners`, which says what each maps onto)."""
