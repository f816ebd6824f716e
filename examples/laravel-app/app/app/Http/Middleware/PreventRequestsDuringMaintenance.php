<?php

namespace App\Http\Middleware;

use Closure;
use Illuminate\Foundation\Http\Middleware\PreventRequestsDuringMaintenance as Middleware;

// 503 while `artisan down` holds (storage/framework/down), except to the deploy gate's own
// health checks (header X-Deployer-Gate: 1): a deploy checks the new release before `up`.
class PreventRequestsDuringMaintenance extends Middleware
{
    public function handle($request, Closure $next)
    {
        if ($request->header('X-Deployer-Gate') === '1') {
            return $next($request);
        }

        return parent::handle($request, $next);
    }
}
