-- Argo CD health check for goodmem.ai/GoodMemConnection and goodmem.ai/ClusterGoodMemConnection (goodmem-operator).
-- Plain Lua 5.1, as Argo CD runs it. Install: the argocd-cm keys
-- resource.customizations.health.goodmem.ai_GoodMemConnection and ..._ClusterGoodMemConnection (argocd-cm.yaml).
-- Tested on every status shape a connection can have: tests/unit/test_argocd_health.py.
--
--   no status yet, no Ready condition, or metadata.generation newer than status.observedGeneration -> Progressing
--   Ready=True (Connected: the registry accepted the key)                                          -> Healthy
--   Ready=False (Unauthorized, Unreachable, RegistryError, SecretNotFound, SecretNotLabelled,
--     InvalidCABundle, NotAllowed): the LLMs bound to it cannot reach the registry               -> Degraded
--   Ready=Unknown                                                                                  -> Progressing
-- A connection being deleted is "Pending deletion" in Argo CD before any health script runs.
local hs = {}

local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return (c.reason or "") .. ": " .. c.message
  end
  return c.reason or ""
end

local status = obj.status
local ready = nil
if status ~= nil and status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then
      ready = c
    end
  end
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to check the connection"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = describe(ready)
return hs
