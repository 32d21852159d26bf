"""The per-day rollup of the point facts is re-aggregated per (config, day) by one SQL function (used by the
services and the trigger); a fiche's group, agent, product or sale date change reaches its facts and their
rollup in the same transaction (a trigger on ``fiche_cache``: scope filters read the facts' copies, so they must
never lag); and the facts' reconciler runs every ten minutes (django-celery-beat)."""

from django.db import migrations

TASK_NAME = "Reconcile analytics facts"

TRIGGER = """
CREATE FUNCTION analytics_point_day_refresh(p_config bigint, p_day date) RETURNS void AS $$
BEGIN
    -- Never during the config's rebuild (it holds the config's lock exclusively and writes the whole rollup),
    -- and one (config, day) at a time: the statements below then see every fact committed before.
    PERFORM pg_advisory_xact_lock_shared(22001, p_config::int);
    PERFORM pg_advisory_xact_lock(22003, hashtext(p_config::text || ':' || p_day::text));
    DELETE FROM analytics_point_days WHERE config_id = p_config AND sales_date = p_day;
    INSERT INTO analytics_point_days (
        config_id, step_position, control_point_index, is_critical, status, sales_date, week, month, groupe,
        produit, n)
    SELECT config_id, step_position, control_point_index, is_critical, status, sales_date, week, month, groupe,
           produit, count(*)
    FROM analytics_point_facts
    WHERE config_id = p_config AND sales_date = p_day
    GROUP BY config_id, step_position, control_point_index, is_critical, status, sales_date, week, month, groupe,
             produit;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION analytics_fiche_changed() RETURNS trigger AS $$
DECLARE
    cfg bigint;
BEGIN
    -- The configs' locks first (as the services take them), so a rebuild running now is waited for before any
    -- fact of this fiche is touched.
    FOR cfg IN SELECT DISTINCT config_id FROM analytics_audit_facts WHERE fiche_id = NEW.id ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock_shared(22001, cfg::int);
    END LOOP;
    UPDATE analytics_audit_facts
       SET groupe = NEW.groupe, crm_user_id = NEW.crm_user_id, agent_name = NEW.agent_name, produit = NEW.produit,
           sales_date = NEW.sales_date, week = date_trunc('week', NEW.sales_date)::date,
           month = date_trunc('month', NEW.sales_date)::date
     WHERE fiche_id = NEW.id;
    UPDATE analytics_point_facts
       SET groupe = NEW.groupe, crm_user_id = NEW.crm_user_id, produit = NEW.produit, sales_date = NEW.sales_date,
           week = date_trunc('week', NEW.sales_date)::date, month = date_trunc('month', NEW.sales_date)::date
     WHERE audit_id IN (SELECT audit_id FROM analytics_audit_facts WHERE fiche_id = NEW.id);
    FOR cfg IN SELECT DISTINCT config_id FROM analytics_audit_facts WHERE fiche_id = NEW.id ORDER BY 1 LOOP
        PERFORM analytics_point_day_refresh(cfg, LEAST(OLD.sales_date, NEW.sales_date));
        IF OLD.sales_date IS DISTINCT FROM NEW.sales_date THEN
            PERFORM analytics_point_day_refresh(cfg, GREATEST(OLD.sales_date, NEW.sales_date));
        END IF;
    END LOOP;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER analytics_fiche_changed
AFTER UPDATE OF groupe, crm_user_id, agent_name, produit, sales_date ON fiche_cache
FOR EACH ROW
WHEN (OLD.groupe IS DISTINCT FROM NEW.groupe OR OLD.crm_user_id IS DISTINCT FROM NEW.crm_user_id
      OR OLD.agent_name IS DISTINCT FROM NEW.agent_name OR OLD.produit IS DISTINCT FROM NEW.produit
      OR OLD.sales_date IS DISTINCT FROM NEW.sales_date)
EXECUTE FUNCTION analytics_fiche_changed();
"""

DROP_TRIGGER = """
DROP TRIGGER IF EXISTS analytics_fiche_changed ON fiche_cache;
DROP FUNCTION IF EXISTS analytics_fiche_changed();
DROP FUNCTION IF EXISTS analytics_point_day_refresh(bigint, date);
"""


def register(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    schedule, _ = IntervalSchedule.objects.get_or_create(every=10, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={"task": "analytics.tasks.reconcile_analytics", "interval": schedule, "enabled": True},
    )


def unregister(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunSQL(TRIGGER, DROP_TRIGGER),
        migrations.RunPython(register, unregister),
    ]
