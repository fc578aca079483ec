# Monthly cost budget of this environment, by its Stack tag (every resource here carries it through
# the provider's default_tags). Budgets see a tag only once it is activated as a cost allocation
# tag (Billing console or `aws ce update-cost-allocation-tags-status`, once per account, after the
# first apply); until then this budget counts nothing. Emails: at 80% of the limit spent, and when
# the month's forecast passes the limit.

locals {
  budget_emails = length(var.budget_alert_emails) > 0 ? var.budget_alert_emails : compact([var.alarm_email])
}

resource "aws_budgets_budget" "monthly" {
  count        = length(local.budget_emails) > 0 ? 1 : 0
  name         = "mediaserver-${var.environment}-monthly"
  budget_type  = "COST"
  limit_amount = tostring(var.monthly_budget_usd)
  limit_unit   = "USD"
  time_unit    = "MONTHLY"

  cost_filter {
    name   = "TagKeyValue"
    values = [format("user:Stack$%s", local.stack_tag)]
  }

  notification {
    comparison_operator        = "GREATER_THAN"
    threshold                  = 80
    threshold_type             = "PERCENTAGE"
    notification_type          = "ACTUAL"
    subscriber_email_addresses = local.budget_emails
  }

  notification {
    comparison_operator        = "GREATER_THAN"
    threshold                  = 100
    threshold_type             = "PERCENTAGE"
    notification_type          = "FORECASTED"
    subscriber_email_addresses = local.budget_emails
  }
}
