-- Argo CD health check for goodmem.ai/LLM (goodmem-operator). Plain Lua 5.1, as Argo CD runs it.
-- Install: the argocd-cm key resource.customizations.health.goodmem.ai_LLM (argocd-cm.yaml beside this file).
-- Tested against the statuses the operator really writes: tests/unit/test_argocd_health.py.
--
--   annotation goodmem.ai/paused=true (Synced=False, ReconcilePaused)      -> Suspended
--   annotation goodmem.ai/dry-run=true (Synced=False, DryRun)              -> Suspended (a plan, nothing applied)
--   no status yet, or metadata.generation newer than status.observedGeneration -> Progressing
--   Ready=True                                                              -> Healthy; with UpToDate=False
--     (ObserveOnly: the entry differs from the spec) still Healthy, the pending changes named in the message
--   Ready=False, permanent (InvalidSpec, AlreadyExists, Conflict,
--     SecretNotAllowed, or a message saying "not retried")                  -> Degraded
--   Ready=False otherwise (Creating, RegistryUnavailable, RateLimited, Unauthorized, Forbidden,
--     SecretNotFound, SecretKeyNotFound, NotFound, Deleting: all retried)   -> Progressing
local hs = {}

local PERMANENT = {InvalidSpec = true, AlreadyExists = true, Conflict = true, SecretNotAllowed = true}

local function condition(conditions, ctype)
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason or ""
end

local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local ready = condition(status.conditions, "Ready")
local synced = condition(status.conditions, "Synced")

-- Paused (or a dry run) first: neither advances observedGeneration, and that is not progress.
if synced ~= nil and synced.status == "False" and (synced.reason == "ReconcilePaused" or synced.reason == "DryRun") then
  hs.status = "Suspended"
  hs.message = describe(synced)
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  -- ObserveOnly never writes: an entry that differs from the spec is the expected first step of onboarding, so
  -- it stays Healthy (not Degraded, which would fail a sync wave), and the message says what managing would change.
  local uptodate = condition(status.conditions, "UpToDate")
  if uptodate ~= nil and uptodate.status == "False" then
    hs.message = hs.message .. "; UpToDate=False: " .. (uptodate.message or "")
  end
  return hs
end

if ready.status == "False" then
  local message = ready.message or ""
  if PERMANENT[ready.reason] or (synced ~= nil and synced.status == "False" and PERMANENT[synced.reason])
      or string.find(message, "not retried", 1, true) ~= nil then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready)
return hs
