"""The database refuses any change of an order's status that is not a transition of its state
machine (orders/lifecycle.py), whoever sends the SQL: a BEFORE UPDATE trigger on PostgreSQL and
SQLite. tests/unit/test_lifecycle.py checks these pairs against lifecycle.ALLOWED_PAIRS."""

from django.db import migrations

# (from, to): lifecycle.ALLOWED_PAIRS when this migration was written. A change to the state
# machine comes with a migration that replaces the trigger.
ALLOWED = [
    ("failed", "cancelled"),
    ("failed", "pending"),
    ("on_hold", "paid"),
    ("paid", "confirmed"),
    ("paid", "on_hold"),
    ("pending", "cancelled"),
    ("pending", "failed"),
    ("pending", "processing"),
    ("processing", "cancelled"),
    ("processing", "failed"),
    ("processing", "paid"),
]
PAIRS = ", ".join(f"'{a}>{b}'" for a, b in ALLOWED)

POSTGRESQL = f"""
CREATE OR REPLACE FUNCTION orders_order_check_transition() RETURNS trigger AS $$
BEGIN
    IF NEW.status <> OLD.status AND (OLD.status || '>' || NEW.status) NOT IN ({PAIRS}) THEN
        RAISE EXCEPTION 'illegal order transition: % -> % (order %)', OLD.status, NEW.status, OLD.number
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER orders_order_transition BEFORE UPDATE OF status ON orders_order
    FOR EACH ROW EXECUTE FUNCTION orders_order_check_transition();
"""
POSTGRESQL_DROP = """
DROP TRIGGER IF EXISTS orders_order_transition ON orders_order;
DROP FUNCTION IF EXISTS orders_order_check_transition();
"""
SQLITE = f"""
CREATE TRIGGER orders_order_transition BEFORE UPDATE OF status ON orders_order
WHEN NEW.status <> OLD.status AND (OLD.status || '>' || NEW.status) NOT IN ({PAIRS})
BEGIN
    SELECT RAISE(ABORT, 'illegal order transition');
END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS orders_order_transition;"


def _run(schema_editor, sql_by_vendor: dict[str, str]) -> None:
    sql = sql_by_vendor.get(schema_editor.connection.vendor)
    if sql:
        with schema_editor.connection.cursor() as cursor:  # no parameters: the % in RAISE stay as they are
            cursor.execute(sql)


def create(apps, schema_editor) -> None:
    _run(schema_editor, {"postgresql": POSTGRESQL, "sqlite": SQLITE})


def drop(apps, schema_editor) -> None:
    _run(schema_editor, {"postgresql": POSTGRESQL_DROP, "sqlite": SQLITE_DROP})


class Migration(migrations.Migration):
    dependencies = [("orders", "0004_order_state_machine")]

    operations = [migrations.RunPython(create, drop)]
