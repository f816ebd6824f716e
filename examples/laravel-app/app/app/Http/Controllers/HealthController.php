<?php

namespace App\Http\Controllers;

use App\Support\Release;
use Illuminate\Routing\Controller;

class HealthController extends Controller
{
    public function __invoke()
    {
        $body = [
            'status' => 'ok',
            'release' => Release::id(),
            'version' => trim((string) @file_get_contents(base_path('VERSION'))),
            'dir' => base_path(),
            'host' => gethostname(),
        ];
        try {
            $body['schema'] = Release::schema();
        } catch (\Throwable $e) {
            $body['status'] = 'fail';
            $body['database'] = $e->getMessage();
        }

        return response()->json($body, $body['status'] === 'ok' ? 200 : 503);
    }
}
